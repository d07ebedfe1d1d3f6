"""latentscape.scene"""
