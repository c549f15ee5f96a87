fn main() {
    println!("edgeopt");
}
