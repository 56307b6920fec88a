"""The whole federation on loopback — CA, coordinator, nodes, an operator and a researcher
as real processes — for the demo, the tests and the benchmarks."""
