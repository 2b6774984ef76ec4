"""Security assurance: the policy of signed pipeline stages and the delivery gate."""
