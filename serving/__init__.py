"""facialattr.serving"""
