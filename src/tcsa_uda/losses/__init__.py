"""losses stage of tcsa-uda."""
