"""The brand's own site: publishable keys (public, origin-bound, read-only) and the
embeddable widgets script (`static/storefront/vitrine.js`) served with cache headers."""
