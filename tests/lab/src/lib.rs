//! The lab: the local control plane inside a network namespace that has only its loopback
//! interface, where pod and Service addresses are local. This crate holds the programs that give
//! that cluster a data path (pod responders, a load generator, a metrics adapter) and, in
//! `tests/`, the tests that send real traffic through it. See tests/lab/README.md.

pub mod adapter;
pub mod load;
pub mod responder;
