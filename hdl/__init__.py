"""convgen.hdl"""
