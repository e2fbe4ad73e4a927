"""convgen.sim"""
