"""convgen.boards"""
