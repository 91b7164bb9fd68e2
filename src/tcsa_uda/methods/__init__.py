"""methods stage of tcsa-uda."""
