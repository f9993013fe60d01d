"""The trainers (train_base.py, train_draft.py) as their command lines run them."""
