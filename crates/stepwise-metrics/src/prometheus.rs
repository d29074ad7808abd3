//! The prometheus provider.
