"""engine stage of tcsa-uda."""
