# The HCL2 twin of twin.json: both must load to the same plan.

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "app_name" {
  type    = string
  default = "web"
}

variable "tag_key" {
  type    = string
  default = "Team"
}

variable "db_password" {
  type      = string
  default   = env("DB_PASSWORD")
  sensitive = true
}

source "amazon-ebs" "app" {
  region = var.region
  source_ami_filter {
    filters = {
      name                = "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-*"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = ["099720109477"]
    most_recent = true
  }
  instance_type   = "t3.small"
  ami_name        = "${var.app_name}-{{timestamp}}"
  ami_description = "${var.app_name} built at ${timestamp()}"
  ami_regions     = ["eu-west-1", "us-west-2"]
  ami_users       = ["123456789012"]
  ami_groups      = ["all"]
  ami_org_arns    = ["arn:aws:organizations::123456789012:organization/o-abcdefghij"]
  ami_ou_arns     = ["arn:aws:organizations::123456789012:ou/o-abcdefghij/ou-ab12-cdefgh34"]
  snapshot_users  = ["123456789012"]
  snapshot_groups = ["all"]
  tags = {
    Name          = var.app_name
    Built         = legacy_isotime(timestamp(), "2006-01-02")
    Source        = "{{ .SourceAMIName }}"
    (var.tag_key) = "platform"
  }
  run_tags        = { Purpose = "kiln build" }
  run_volume_tags = { Purpose = "kiln build volume" }
  snapshot_tags   = { Snapshot = "true" }
  communicator    = "ssh"
  ssh_username    = "ubuntu"
  ssh_interface   = "private_ip"
  ssh_timeout     = "10m"
  subnet_filter {
    filters   = { "tag:Tier" = "private" }
    most_free = true
    random    = false
  }
  vpc_filter {
    filters = { "tag:Name" = "build", isDefault = "false" }
  }
  security_group_ids          = ["sg-0123456789abcdef0"]
  associate_public_ip_address = false
  iam_instance_profile        = "kiln-build"
  user_data_file              = "files/user_data.sh"
  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_type           = "gp3"
    volume_size           = 20
    iops                  = 3000
    throughput            = 250
    delete_on_termination = true
    encrypted             = true
    kms_key_id            = "alias/build"
  }
  ami_block_device_mappings {
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
    volume_type = "gp2"
    volume_size = 8
  }
  encrypt_boot       = true
  kms_key_id         = "alias/ami"
  region_kms_key_ids = { "eu-west-1" = "alias/ami-eu", "us-west-2" = "alias/ami-us" }
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
  temporary_key_pair_type = "ed25519"
  shutdown_behavior       = "terminate"
  ena_support             = true
  sriov_support           = true
}

source "amazon-ebs" "alt" {
  region                      = "us-east-1"
  source_ami                  = "ami-0123456789abcdef0"
  instance_type               = "t3.micro"
  ami_name                    = "alt-${var.app_name}"
  communicator                = "ssh"
  ssh_username                = "ec2-user"
  ssh_interface               = "session_manager"
  iam_instance_profile        = "kiln-ssm"
  subnet_id                   = "subnet-0123456789abcdef0"
  vpc_id                      = "vpc-0123456789abcdef0"
  associate_public_ip_address = true
  user_data                   = "#!/bin/sh\necho ${var.app_name} > /etc/motd\n"
  temporary_key_pair_type     = "rsa"
  shutdown_behavior           = "stop"
  ena_support                 = false
}

build {
  sources = ["source.amazon-ebs.app", "source.amazon-ebs.alt"]

  provisioner "shell" {
    name             = "base packages"
    inline           = ["sudo apt-get update", "echo ${var.app_name}"]
    environment_vars = ["APP=${var.app_name}", "REGION=${var.region}"]
    env              = { APP_NAME = var.app_name }
    execute_command  = "echo 'packer' | sudo -S sh -c '{{ .Vars }} {{ .Path }}'"
    inline_shebang   = "/bin/bash -ex"
    expect_disconnect = true
    valid_exit_codes = [0, 2300218]
    remote_folder    = "/var/tmp"
    skip_clean       = true
    pause_before     = "10s"
    max_retries      = 3
    timeout          = "5m"
  }

  provisioner "shell" {
    script = "scripts/setup.sh"
    only   = ["amazon-ebs.alt"]
  }

  provisioner "shell" {
    scripts = ["scripts/a.sh", "scripts/b.sh"]
    except  = ["amazon-ebs.alt"]
  }

  provisioner "file" {
    source      = "files/app.conf"
    destination = "/tmp/app.conf"
  }

  provisioner "file" {
    sources     = ["files/conf.d/", "files/app.conf"]
    destination = "/tmp/"
    direction   = "upload"
  }

  provisioner "file" {
    content     = "password=${var.db_password}\n"
    destination = "/etc/app/env"
  }

  provisioner "ansible" {
    playbook_file   = "ansible/site.yml"
    roles_path      = "ansible/roles"
    galaxy_file     = "ansible/requirements.yml"
    extra_arguments = ["--extra-vars", "app=${var.app_name}"]
    only            = ["amazon-ebs.app"]
  }

  provisioner "ansible-local" {
    playbook_file   = "ansible/site.yml"
    playbook_dir    = "ansible"
    role_paths      = ["ansible/roles/common"]
    galaxy_file     = "ansible/requirements.yml"
    extra_arguments = ["-v"]
  }

  error-cleanup-provisioner "shell" {
    inline = ["journalctl -n 200 || true"]
  }

  post-processor "manifest" {
    output      = "manifest.json"
    strip_path  = true
    strip_time  = true
    custom_data = { app = var.app_name }
  }

  post-processors {
    post-processor "manifest" {
      output = "sequence.json"
    }
  }
}
