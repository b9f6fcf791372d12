variable "region" {
  type        = string
  default     = "us-east-1"
  description = "Region the build instance runs in."
}

variable "copy_regions" {
  type        = list(string)
  default     = ["us-west-2", "eu-west-1"]
  description = "Extra Regions the image is copied to."
}

variable "share_with" {
  type        = list(string)
  default     = ["210987654321"]
  description = "Accounts allowed to launch the image."
}

variable "app_version" {
  type    = string
  default = "1.4.2"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.app_version))
    error_message = "The app_version must look like 1.2.3."
  }
}

locals {
  stamp = formatdate("YYYYMMDDhhmmss", timestamp())
}
