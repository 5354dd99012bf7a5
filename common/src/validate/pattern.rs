//! The field rules as regular expressions: the validator here and the published JSON Schema
//! (through `#[schemars(pattern(…))]` on the parameters types) use the same constants, so
//! services in other languages that validate against the schema refuse what the worker
//! would refuse. A test runs every invalid case through both.

pub const AMI_ID: &str = r"^ami-([0-9a-f]{8}|[0-9a-f]{17})$";
pub const INSTANCE_ID: &str = r"^i-([0-9a-f]{8}|[0-9a-f]{17})$";
pub const VOLUME_ID: &str = r"^vol-([0-9a-f]{8}|[0-9a-f]{17})$";
pub const SUBNET_ID: &str = r"^subnet-([0-9a-f]{8}|[0-9a-f]{17})$";
pub const SECURITY_GROUP_ID: &str = r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$";
/// family[-variant].size: t2.micro, c7i-flex.large, u-6tb1.112xlarge, mac2-m2pro.metal
pub const INSTANCE_TYPE: &str = r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$";
/// us-east-1d, us-gov-west-1a, and local zones such as us-west-2-lax-1a
pub const AVAILABILITY_ZONE: &str = r"^[a-z]{2}(-[a-z0-9]+)*-[0-9]+[a-z]$";
/// 3 to 128 letters, digits, spaces and `( ) [ ] . / - ' @ _`.
pub const AMI_NAME: &str = r"^[A-Za-z0-9()\[\] ./'@_-]{3,128}$";
/// Text EC2's XML can carry: no control character but tab, line feed, carriage return.
pub const XML_SAFE: &str = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]*$";
/// A key pair name: 1 to 255 ASCII characters EC2's XML can carry.
pub const KEY_NAME: &str = r"^[\t\n\r\x20-\x7F]{1,255}$";
/// A tag key: 1 to 128 characters EC2's XML can carry, not starting with `aws:` or
/// `shoal:` in any case. (Schema only: the validator says which rule a key breaks.)
pub const TAG_KEY: &str =
    r"^(?![aA][wW][sS]:)(?![sS][hH][oO][aA][lL]:)[^\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]{1,128}$";
