//! The parts of the program fuzzer: the reference model, the world it runs
//! in, and the input generator.
pub mod inputs;
pub mod model;
pub mod world;
