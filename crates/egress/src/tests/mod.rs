//! Tests of the guard's decisions (no connection is attempted) and of the
//! pool against loopback servers and a loopback proxy.

mod decisions;
mod headers;
mod pool;
mod proxy;
mod servers;
