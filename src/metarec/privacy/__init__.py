"""Privacy: user-level DP-SGD meta-training (`dp`), federated meta-learning (`federated`) and a
membership-inference check of what a trained model gives away (`membership`).

Deletion on request lives where the data lives: `serve` (DELETE /users/{id}) and `data.pseudonym`.
"""
