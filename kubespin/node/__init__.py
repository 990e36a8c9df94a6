"""`kubespin node`: a local Kubernetes node for development and tests. Not part of the product.

It registers a Node with a cluster (normally `kubespin devcluster`), keeps it Ready, and runs the pods
scheduled to it whose container runs the kubespin shim (`kubespin up ...`) as processes on this
machine, the way a kubelet would run that pod shape. There is no container, no isolation, no image
pull, no kubelet API (`kubectl logs/exec` do not work: logs are files under the node's state dir).
Production clusters run the shim image under a real kubelet. See docs/node.md.
"""
