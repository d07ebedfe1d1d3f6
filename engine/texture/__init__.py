"""latentscape.texture"""
