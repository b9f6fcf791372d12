from_var_file = [1, 2, 3]
