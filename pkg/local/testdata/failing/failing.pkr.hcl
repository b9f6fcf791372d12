source "amazon-ebs" "failing" {
  region        = "us-east-1"
  instance_type = "t3.micro"
  ssh_username  = "ubuntu"
  source_ami    = "ami-785db401"
  ami_name      = "failing-${uuidv4()}"
  ami_regions   = ["us-west-2"]
}

build {
  sources = ["source.amazon-ebs.failing"]

  provisioner "shell" {
    inline = ["echo preparing"]
  }

  provisioner "shell" {
    name   = "smoke test"
    inline = ["echo checking the service", "echo 'service did not answer' >&2", "exit 3"]
  }
}
