//! The `btps` command line.

fn main() {
    println!("btps");
}
