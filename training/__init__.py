"""facialattr.training"""
