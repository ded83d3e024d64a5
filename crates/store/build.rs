//! Rebuilds the crate when a migration is added or changed: the migrations
//! are embedded at compile time, and cargo tracks only the crate's sources.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
