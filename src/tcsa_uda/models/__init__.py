"""models stage of tcsa-uda."""
