# Variables, as Packer's documentation lays a template out.
variable "region" {
  type        = string
  default     = "us-east-1"
  description = "Region to build in."
}

variable "app_version" {
  type = string
}

variable "instance_type" {
  type    = string
  default = "t3.micro"
}

variable "copy_regions" {
  type    = list(string)
  default = []
}

variable "db_password" {
  type      = string
  sensitive = true
}

locals {
  timestamp = regex_replace(timestamp(), "[- TZ:]", "")
  ami_name  = "app-${var.app_version}-${local.timestamp}"
}
