"""Small real HTTP servers standing in for the providers, written from ../shared/provider-docs."""
