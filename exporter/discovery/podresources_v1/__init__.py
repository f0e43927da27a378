"""Generated from api.proto (see README.md); not edited by hand."""
