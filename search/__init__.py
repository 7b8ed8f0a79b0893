"""Search: vector selectors, the REST API and the shopper pages."""
