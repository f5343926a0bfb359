"""The kernelspec template and logos, installed as ``rk_jupyter.kernelspecs``."""
