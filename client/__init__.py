"""facialattr.client"""
