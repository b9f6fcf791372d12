app_version  = "1.4.2"
copy_regions = ["eu-west-1"]
