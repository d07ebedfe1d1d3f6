"""latentscape.field"""
