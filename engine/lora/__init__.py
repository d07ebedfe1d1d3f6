"""latentscape.lora"""
