"""latentscape.sinks"""
