# The scale benchmark's bake: no communicator, so no SSH and no sandbox;
# launch, stop, image, in one Region. The recipe's variable "n" names each
# of the 200 bakes apart.
variable "n" {
  type    = string
  default = "0"
}

source "amazon-ebs" "none" {
  region        = "us-east-1"
  instance_type = "t3.micro"
  communicator  = "none"
  source_ami    = "ami-785db401"
  ami_name      = "bench-none-${var.n}-${formatdate("YYYYMMDDhhmmss", timestamp())}"
}

build {
  sources = ["source.amazon-ebs.none"]
}
