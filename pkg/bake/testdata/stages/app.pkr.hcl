# A small recipe for the launch and cleanup stage tests.
variable "version" {
  type    = string
  default = "1.0"
}

variable "secret_from_env" {
  type    = string
  default = env("AWS_SECRET_ACCESS_KEY")
}

data "amazon-ami" "base" {
  filters = {
    name = "al2023-ami-*"
  }
  owners      = ["amazon"]
  most_recent = true
}

source "amazon-ebs" "app" {
  region        = "eu-west-1"
  ami_regions   = ["eu-west-1", "us-east-1", "eu-central-1", "us-east-1"]
  source_ami    = data.amazon-ami.base.id
  instance_type = "t3.micro"
  ssh_username  = "ec2-user"
  ami_name      = "app-${var.version}-${uuidv4()}"
  ami_description = "secret=[${var.secret_from_env}] built ${timestamp()}"
  run_tags = {
    team = "core"
  }
}

build {
  sources = ["source.amazon-ebs.app"]

  provisioner "shell" {
    inline = ["echo hello"]
  }
}
