source "amazon-ebs" "slow" {
  region        = "us-east-1"
  instance_type = "t3.micro"
  ssh_username  = "ubuntu"
  source_ami    = "ami-785db401"
  ami_name      = "slow-${uuidv4()}"
}

build {
  sources = ["source.amazon-ebs.slow"]

  provisioner "shell" {
    inline = ["echo provisioning has begun", "sleep 120", "echo too late"]
  }
}
