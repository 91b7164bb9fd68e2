"""evaluation stage of tcsa-uda."""
