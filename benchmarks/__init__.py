"""facialattr.benchmarks"""
