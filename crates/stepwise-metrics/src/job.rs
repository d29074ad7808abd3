//! The job provider.
