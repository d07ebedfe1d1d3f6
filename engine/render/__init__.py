"""latentscape.render"""
