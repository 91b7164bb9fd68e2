"""text stage of tcsa-uda."""
