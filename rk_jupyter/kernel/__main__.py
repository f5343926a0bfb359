from ipykernel.kernelapp import IPKernelApp

from .kernel import WolframKernel

IPKernelApp.launch_instance(kernel_class=WolframKernel)
