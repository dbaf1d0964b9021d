"""facialattr.export"""
