source "amazon-ebs" "hello" {
  region        = "us-east-1"
  instance_type = "t3.micro"
  ssh_username  = "ubuntu"
  source_ami    = "ami-785db401"
  ami_name      = "hello-${uuidv4()}"
  ami_regions   = ["us-west-2"]
}

build {
  sources = ["source.amazon-ebs.hello"]

  provisioner "shell" {
    inline = ["echo hello from the sandbox"]
  }
}
