//! Benchmarks for Violin are built under their own issue (`cargo xtask bench`).
