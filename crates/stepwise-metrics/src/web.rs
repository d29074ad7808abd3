//! The web provider.
