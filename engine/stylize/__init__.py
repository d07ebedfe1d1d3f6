"""latentscape.stylize"""
