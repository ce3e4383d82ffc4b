//! Benchmark support. The `arlen-baseline` binary is the comparison point of
//! `bench/request-path.py`; `benches/request_path.rs` holds the criterion
//! micro-benchmarks (`cargo bench -p arlen-bench`).

#![forbid(unsafe_code)]
