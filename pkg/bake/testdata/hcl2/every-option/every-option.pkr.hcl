# Every option kiln reads from an HCL2 template, each set once.

packer {
  required_version = ">= 1.9.0"
  required_plugins {
    amazon = {
      version = ">= 1.3.0"
      source  = "github.com/hashicorp/amazon"
    }
    ansible = {
      version = "~> 1"
      source  = "github.com/hashicorp/ansible"
    }
  }
}

# Variables of each kind.
variable "region" {
  type        = string
  default     = "eu-west-1"
  description = "Region the build runs in."
}

variable "instance_count" {
  type    = number
  default = 2
}

variable "encrypt" {
  type    = bool
  default = true
}

variable "regions" {
  type    = list(string)
  default = ["eu-central-1", "us-east-1"]
}

variable "extra_tags" {
  type    = map(string)
  default = { Team = "platform" }
}

variable "disk" {
  type = object({
    size = number
    type = optional(string, "gp3")
  })
  default = { size = 20 }
}

variable "env_name" {
  type    = string
  default = env("KILN_ENV")
}

variable "owner" {
  type        = string
  description = "Set with -var."
  validation {
    condition     = can(regex("^[a-z]+$", var.owner))
    error_message = "The owner must be lower-case letters."
  }
}

variable "api_token" {
  type      = string
  sensitive = true
  default   = "s3cr3t-token"
}

variable "note" {
  type     = string
  default  = null
  nullable = true
}

variable "from_env" {
  default = "unset"
}

variable "from_var_file" {
  type    = list(number)
  default = [1]
}

variables {
  legacy_style = "old"
}

locals {
  stamp       = formatdate("YYYYMMDDhhmmss", timestamp())
  all_tags    = merge(var.extra_tags, { Owner = var.owner, Count = format("%d", var.instance_count) })
  name_prefix = "${local.base}-${var.env_name}"
  base        = lower("Every")
  ubuntu_ami  = data.amazon-ami.ubuntu.id
}

local "auth_header" {
  expression = "Bearer ${var.api_token}"
  sensitive  = true
}

data "amazon-ami" "ubuntu" {
  filters = {
    name                = "ubuntu/images/*ubuntu-jammy-22.04-arm64-server-*"
    virtualization-type = "hvm"
  }
  owners             = ["099720109477"]
  most_recent        = true
  include_deprecated = false
  region             = var.region
}

data "amazon-parameterstore" "base" {
  name            = "/kiln/base-ami"
  with_decryption = false
  region          = "us-east-1"
}

source "amazon-ebs" "every" {
  region          = var.region
  source_ami      = local.ubuntu_ami
  instance_type   = "m7g.large"
  ami_name        = "${local.name_prefix}-{{timestamp}}"
  ami_description = "Every option, ${local.stamp}"
  ami_regions     = var.regions
  ami_users       = ["123456789012"]
  ami_groups      = ["all"]
  ami_org_arns    = ["arn:aws:organizations::123456789012:organization/o-abc123"]
  ami_ou_arns     = ["arn:aws:organizations::123456789012:ou/o-abc123/ou-ab12-cdef3456"]
  snapshot_users  = ["210987654321"]
  snapshot_groups = ["all"]
  tags            = local.all_tags
  tag {
    key   = "Built-By"
    value = "kiln"
  }
  run_tags = { Purpose = "bake" }
  run_tag {
    key   = "Stage"
    value = "build"
  }
  run_volume_tags = { Purpose = "bake-volume" }
  run_volume_tag {
    name  = "Scratch"
    value = "yes"
  }
  snapshot_tags = { Snapshot = "yes" }
  snapshot_tag {
    key   = "Retain"
    value = "30d"
  }
  communicator  = "ssh"
  ssh_interface = "session_manager"
  ssh_username  = "ubuntu"
  ssh_timeout   = "10m"
  subnet_filter {
    filters = { "tag:Tier" = "private" }
    filter {
      name  = "availability-zone"
      value = "eu-west-1a"
    }
    most_free = true
    random    = false
  }
  vpc_filter {
    filters = { "tag:Name" = "build" }
  }
  security_group_ids          = ["sg-0123456789abcdef0"]
  associate_public_ip_address = false
  iam_instance_profile        = "kiln-build"
  user_data_file              = "files/user-data.sh"
  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_type           = var.disk.type
    volume_size           = var.disk.size
    iops                  = 4000
    throughput            = 250
    delete_on_termination = true
    encrypted             = true
    kms_key_id            = "alias/ebs"
  }
  launch_block_device_mappings {
    device_name  = "/dev/sdb"
    virtual_name = "ephemeral0"
  }
  ami_block_device_mappings {
    device_name = "/dev/sdc"
    no_device   = true
  }
  ami_block_device_mappings {
    device_name = "/dev/sdd"
    snapshot_id = "snap-0123456789abcdef0"
    volume_type = "io2"
    iops        = 1000
    volume_size = 50
  }
  encrypt_boot       = var.encrypt
  kms_key_id         = "alias/ami"
  region_kms_key_ids = { "eu-central-1" = "alias/ami-eu", "us-east-1" = "alias/ami-us" }
  imds_support       = "v2.0"
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 2
    instance_metadata_tags      = "enabled"
  }
  deprecate_at            = "2030-01-01T00:00:00Z"
  force_deregister        = true
  force_delete_snapshot   = true
  temporary_key_pair_type = "rsa"
  shutdown_behavior       = "terminate"
  ena_support             = true
  sriov_support           = true
}

source "amazon-ebs" "param" {
  region        = "us-east-1"
  source_ami    = data.amazon-parameterstore.base.value
  instance_type = "t3.micro"
  ami_name      = "param-{{isotime \"2006-01-02\"}}-{{uuid}}"
  user_data     = "#cloud-config\n"
  subnet_id     = "subnet-0123456789abcdef0"
  vpc_id        = "vpc-0123456789abcdef0"
}

build {
  name        = "every"
  description = "Builds both sources."
  sources     = ["source.amazon-ebs.every"]

  source "source.amazon-ebs.param" {
    name         = "param-copy"
    ssh_username = "ec2-user"
  }

  provisioner "shell" {
    name              = "inline"
    inline            = ["echo ${build.name} ${source.name}", "echo ${local.auth_header}"]
    environment_vars  = ["OWNER=${var.owner}", "EMPTY="]
    env               = { NOTE = coalesce(var.note, "none"), LEGACY = var.legacy_style }
    execute_command   = "sudo -E sh -c '{{ .Vars }} {{ .Path }}'"
    inline_shebang    = "/bin/bash -ex"
    expect_disconnect = true
    valid_exit_codes  = [0, 2300218]
    remote_folder     = "/var/tmp"
    skip_clean        = true
    pause_before      = "10s"
    max_retries       = 3
    timeout           = "20m"
    only              = ["amazon-ebs.every"]
  }

  provisioner "shell" {
    script = "files/setup.sh"
    except = ["param-copy"]
  }

  provisioner "file" {
    source      = "files/app.conf"
    destination = "/tmp/app.conf"
    direction   = "upload"
  }

  provisioner "file" {
    sources     = ["files/app.conf", "files/etc/"]
    destination = "/tmp/"
  }

  provisioner "file" {
    content     = templatefile("files/motd.tpl", { name = var.owner, regions = var.regions })
    destination = "/etc/motd"
  }

  provisioner "ansible" {
    playbook_file   = "ansible/site.yml"
    roles_path      = "ansible/roles"
    galaxy_file     = "ansible/requirements.yml"
    extra_arguments = ["--extra-vars", "env=${var.env_name}"]
    only            = ["every.amazon-ebs.every"]
  }

  provisioner "ansible-local" {
    playbook_file   = "ansible/site.yml"
    playbook_dir    = "ansible"
    role_paths      = ["ansible/roles/common"]
    galaxy_file     = "ansible/requirements.yml"
    extra_arguments = ["-v"]
  }

  error-cleanup-provisioner "shell" {
    inline = ["journalctl -n 100 || true"]
  }

  post-processor "manifest" {
    output              = "out/manifest.json"
    strip_path          = true
    strip_time          = true
    custom_data         = { owner = var.owner, files = join(",", sort(fileset(".", "files/*.conf"))) }
    keep_input_artifact = true
  }

  post-processors {
    post-processor "manifest" {
      name = "second"
      only = ["amazon-ebs.every"]
    }
  }
}
