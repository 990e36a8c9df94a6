"""`kubespin kv|link|unlink|apps` (also `kubectl spin ...`): Fermyon Cloud's links-and-labels commands
(`spin cloud kv`, `spin cloud link`, `spin cloud apps`) for kubespin's KeyValueStore / StoreLink / SpinApp.

Everything goes through the Kubernetes API with the user's own kubeconfig, so RBAC decides what a
person may see and change. Store *data* (`kv get/set`) is read from the backend with a URL that only
a user allowed to read the store's Secret can obtain; there is no kubespin endpoint in between.
"""
