"""Load generator for OpenAI-compatible servers, with live client-side histograms."""
