use super::*;
use crate::op::{Activation, BinaryKind, UnaryKind};

fn fixed(shape: &[usize]) -> Option<Vec<Dim>> {
    Some(shape.iter().map(|&d| Dim::Fixed(d)).collect())
}

fn relu() -> Op {
    Op::Unary(UnaryKind::Relu)
}

fn neg() -> Op {
    Op::Unary(UnaryKind::Neg)
}

fn add() -> Op {
    Op::Binary {
        kind: BinaryKind::Add,
        activation: Activation::None,
    }
}

/// x [1, 4] -> relu -> a -> neg -> y (the graph output).
fn chain() -> Graph {
    let mut g = Graph::new("chain");
    let x = g.add_value("x", DType::F32, fixed(&[1, 4]));
    let a = g.add_value("a", DType::F32, fixed(&[1, 4]));
    let y = g.add_value("y", DType::F32, fixed(&[1, 4]));
    g.add_node("relu", relu(), vec![Some(x)], vec![a]);
    g.add_node("neg", neg(), vec![Some(a)], vec![y]);
    g.inputs = vec![x];
    g.outputs = vec![y];
    g.validate().unwrap();
    g
}

fn id(g: &Graph, name: &str) -> ValId {
    ValId(g.find_value(name).unwrap())
}

fn node(g: &Graph, name: &str) -> NodeId {
    NodeId(g.nodes.iter().position(|n| n.name == name).unwrap())
}

fn names(g: &Graph) -> Vec<&str> {
    g.nodes.iter().map(|n| n.name.as_str()).collect()
}

fn input_names<'a>(g: &'a Graph, n: &str) -> Vec<&'a str> {
    let n = &g.nodes[node(g, n).0];
    n.present_inputs()
        .map(|i| g.values[i].name.as_str())
        .collect()
}

#[test]
fn replace_a_node_keeping_its_output() {
    let mut g = chain();
    let mut p = Patch::new(&g);
    let relu_n = node(&g, "relu");
    let new = p
        .add_node(
            "sig",
            Op::Unary(UnaryKind::Sigmoid),
            &[Some(id(&g, "x"))],
            &[id(&g, "a")],
        )
        .unwrap();
    p.replace(&[relu_n], &[new]).unwrap();
    let applied = p.apply(&mut g).unwrap();
    assert_eq!(names(&g), ["sig", "neg"]);
    assert_eq!(g.nodes[0].op, Op::Unary(UnaryKind::Sigmoid));
    // The value keeps its id, name and shape; nothing else changed.
    assert_eq!(g.values.len(), 3);
    assert_eq!(input_names(&g, "neg"), ["a"]);
    assert_eq!(applied.node(new), Some(NodeId(0)));
    assert_eq!(applied.node(relu_n), None);
    g.validate().unwrap();
}

#[test]
fn insert_on_an_edge() {
    let mut g = chain();
    let mut p = Patch::new(&g);
    let a = id(&g, "a");
    // No shape given: apply infers it.
    let b = p.add_value("a", DType::F32, None);
    let ident = p.add_node("ident", Op::Identity, &[Some(a)], &[b]).unwrap();
    p.rewire(a, b).unwrap();
    let applied = p.apply(&mut g).unwrap();
    // Placed right after the producer of its input; the new name is fresh.
    assert_eq!(names(&g), ["relu", "ident", "neg"]);
    assert_eq!(input_names(&g, "ident"), ["a"]);
    assert_eq!(input_names(&g, "neg"), ["a_1"]);
    let b = applied.value(b).unwrap();
    assert_eq!(g.values[b.0].name, "a_1");
    assert_eq!(g.values[b.0].shape, fixed(&[1, 4]));
    assert_eq!(applied.node(ident), Some(NodeId(1)));
}

#[test]
fn remove_a_chain() {
    // x -> relu -> a -> neg -> y -> relu2 -> z: bypass [neg, relu2].
    let mut g = chain();
    let y = g.find_value("y").unwrap();
    let z = g.add_value("z", DType::F32, fixed(&[1, 4]));
    g.add_node("relu2", relu(), vec![Some(y)], vec![z]);
    g.outputs = vec![z];
    let mut p = Patch::new(&g);
    p.bypass(&g, &[node(&g, "neg"), node(&g, "relu2")]).unwrap();
    p.apply(&mut g).unwrap();
    assert_eq!(names(&g), ["relu"]);
    // The graph output is the chain's input now; y and z are gone.
    assert_eq!(g.outputs.len(), 1);
    assert_eq!(g.values[g.outputs[0]].name, "a");
    assert!(g.find_value("y").is_none() && g.find_value("z").is_none());
    // A chain that is not one: relu2 does not read relu's output.
    let g2 = {
        let mut g = chain();
        let y = g.find_value("y").unwrap();
        let z = g.add_value("z", DType::F32, fixed(&[1, 4]));
        g.add_node("relu2", relu(), vec![Some(y)], vec![z]);
        g
    };
    let mut p = Patch::new(&g2);
    let err = p
        .bypass(&g2, &[node(&g2, "relu"), node(&g2, "relu2")])
        .unwrap_err();
    assert!(err.to_string().contains("does not read"), "{err}");
}

#[test]
fn rewire_graph_outputs() {
    let mut g = chain();
    let mut p = Patch::new(&g);
    let y = id(&g, "y");
    let z = p.add_value("z", DType::F32, None);
    p.add_node("relu_out", relu(), &[Some(y)], &[z]).unwrap();
    p.rewire(y, z).unwrap();
    p.apply(&mut g).unwrap();
    assert_eq!(names(&g), ["relu", "neg", "relu_out"]);
    // The new node still reads y (the patch's nodes are not rewired); the output is z.
    assert_eq!(input_names(&g, "relu_out"), ["y"]);
    assert_eq!(g.values[g.outputs[0]].name, "z");
}

#[test]
fn dead_nodes_and_values_go_and_ids_are_renumbered_in_order() {
    // A side branch nobody needs: x -> add(c) -> s.
    let mut g = chain();
    let x = g.find_value("x").unwrap();
    let c = g.add_const("c", Tensor::from_f32(vec![1, 4], vec![1.0; 4]).unwrap());
    let s = g.add_value("s", DType::F32, fixed(&[1, 4]));
    g.add_node("side", add(), vec![Some(x), Some(c)], vec![s]);
    let unused = g.add_value("unused", DType::F32, None);
    let kept = g.clone();

    let mut k = g.clone();
    let applied = Patch::new(&k)
        .with_dead_nodes(DeadNodes::Keep)
        .apply(&mut k)
        .unwrap();
    assert_eq!(names(&k), ["relu", "neg", "side"]);
    assert_eq!(applied.value(ValId(unused)), None);
    assert_eq!(k.values.len(), kept.values.len() - 1);

    let applied = Patch::new(&g).apply(&mut g).unwrap();
    assert_eq!(names(&g), ["relu", "neg"]);
    let left: Vec<&str> = g.values.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(left, ["x", "a", "y"]);
    assert_eq!(applied.value(ValId(c)), None);
    assert_eq!(applied.value(ValId(s)), None);
    assert_eq!(applied.value(id(&kept, "y")), Some(ValId(2)));
    assert_eq!(applied.node(node(&kept, "side")), None);
}

#[test]
fn remove_dead_nodes_is_the_compaction() {
    let mut g = chain();
    let x = g.find_value("x").unwrap();
    let s = g.add_value("s", DType::F32, fixed(&[1, 4]));
    g.add_node("side", relu(), vec![Some(x)], vec![s]);
    let r = g.remove_dead_nodes();
    assert_eq!(names(&g), ["relu", "neg"]);
    assert_eq!(r.nodes, [Some(0), Some(1), None]);
    assert_eq!(r.values, [Some(0), Some(1), Some(2), None]);
    // A malformed graph (an out-of-range output) is compacted without a panic.
    g.outputs.push(99);
    g.remove_dead_nodes();
    assert!(g.validate().is_err());
}

#[test]
fn fuse_a_pattern_and_fold_a_constant() {
    // x -> add(x, n) with n = neg(c) -> s -> relu -> y: fold neg(c), fuse add + relu.
    let mut g = Graph::new("fuse");
    let x = g.add_value("x", DType::F32, fixed(&[1, 4]));
    let c = g.add_const(
        "c",
        Tensor::from_f32(vec![4], vec![1.0, -2.0, 3.0, -4.0]).unwrap(),
    );
    let n = g.add_value("n", DType::F32, fixed(&[4]));
    let s = g.add_value("s", DType::F32, fixed(&[1, 4]));
    let y = g.add_value("y", DType::F32, fixed(&[1, 4]));
    g.add_node("negc", neg(), vec![Some(c)], vec![n]);
    g.add_node("add", add(), vec![Some(x), Some(n)], vec![s]);
    g.add_node("relu", relu(), vec![Some(s)], vec![y]);
    g.inputs = vec![x];
    g.outputs = vec![y];
    let mut p = Patch::new(&g);
    p.remove_node(NodeId(0)).unwrap();
    p.set_const(
        ValId(n),
        Tensor::from_f32(vec![4], vec![-1.0, 2.0, -3.0, 4.0]).unwrap(),
    )
    .unwrap();
    let fused = p
        .add_node(
            "add_relu",
            Op::Binary {
                kind: BinaryKind::Add,
                activation: Activation::Relu,
            },
            &[Some(ValId(x)), Some(ValId(n))],
            &[ValId(y)],
        )
        .unwrap();
    p.replace(&[NodeId(1), NodeId(2)], &[fused]).unwrap();
    p.apply(&mut g).unwrap();
    assert_eq!(names(&g), ["add_relu"]);
    let names_left: Vec<&str> = g.values.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names_left, ["x", "n", "y"]);
    assert_eq!(
        g.values[1].data.as_ref().unwrap().as_f32().unwrap(),
        &[-1.0, 2.0, -3.0, 4.0]
    );
}

#[test]
fn a_layout_that_is_not_topological_is_sorted() {
    // A node inserted before relu that reads neg's output: it must move after neg.
    let mut g = chain();
    let y = id(&g, "y");
    let mut p = Patch::new(&g);
    let z = p.add_value("z", DType::F32, None);
    p.insert_before(node(&g, "relu"), "late", relu(), &[Some(y)], &[z])
        .unwrap();
    p.rewire(y, z).unwrap();
    p.apply(&mut g).unwrap();
    assert_eq!(names(&g), ["relu", "neg", "late"]);
    g.validate().unwrap();
}

#[test]
fn symbolic_batch_is_kept_by_reinference() {
    let mut g = chain();
    g.values[0].shape = Some(vec![Dim::Sym("N".into()), Dim::Fixed(4)]);
    let mut p = Patch::new(&g).with_shapes(Shapes::Reinfer);
    let a = id(&g, "a");
    let b = p.add_value("b", DType::F32, None);
    p.add_node("ident", Op::Identity, &[Some(a)], &[b]).unwrap();
    p.rewire(a, b).unwrap();
    let applied = p.apply(&mut g).unwrap();
    let b = applied.value(b).unwrap();
    assert_eq!(
        g.values[b.0].shape,
        Some(vec![Dim::Sym("N".into()), Dim::Fixed(4)])
    );
    assert_eq!(
        g.values[g.outputs[0]].shape,
        Some(vec![Dim::Sym("N".into()), Dim::Fixed(4)])
    );
}

/// Applies `p` to `g`, expects an error containing `needle`, and checks the graph
/// is unchanged.
fn fails(g: &Graph, p: Patch, needle: &str) {
    let mut h = g.clone();
    let err = p.apply(&mut h).unwrap_err().to_string();
    assert!(err.contains(needle), "'{err}' lacks '{needle}'");
    assert_eq!(&h, g, "a failed apply changed the graph");
}

#[test]
fn invalid_patches_are_errors() {
    let g = chain();
    let (x, a, y) = (id(&g, "x"), id(&g, "a"), id(&g, "y"));
    let (relu_n, neg_n) = (node(&g, "relu"), node(&g, "neg"));

    // Removing a producer whose output is still read.
    let mut p = Patch::new(&g);
    p.remove_node(relu_n).unwrap();
    fails(&g, p, "'a', whose producer 'relu' the patch removes");

    // A graph output nothing produces any more.
    let mut p = Patch::new(&g);
    p.remove_node(neg_n).unwrap();
    fails(
        &g,
        p,
        "graph output 'y', whose producer 'neg' the patch removes",
    );

    // A cycle: relu reads neg's output.
    let mut p = Patch::new(&g);
    p.set_input(relu_n, 0, Some(y)).unwrap();
    fails(&g, p, "cycle");

    // A value produced twice.
    let mut p = Patch::new(&g);
    p.add_node("again", relu(), &[Some(x)], &[a]).unwrap();
    fails(&g, p, "already produced");

    // A declared dtype the new node does not compute.
    let mut p = Patch::new(&g);
    let b = p.add_value("b", DType::I8, None);
    p.add_node("ident", Op::Identity, &[Some(a)], &[b]).unwrap();
    p.rewire(a, b).unwrap();
    fails(&g, p, "declared i8 but computes f32");

    // A declared shape the new node does not compute.
    let mut p = Patch::new(&g);
    let b = p.add_value("b", DType::F32, fixed(&[1, 5]));
    p.add_node("ident", Op::Identity, &[Some(a)], &[b]).unwrap();
    p.rewire(a, b).unwrap();
    fails(&g, p, "declared [1, 5] but computes [1, 4]");

    // An op whose shape rule rejects its inputs.
    let mut p = Patch::new(&g);
    let c = p.add_const("c", Tensor::from_f32(vec![3], vec![0.0; 3]).unwrap());
    let b = p.add_value("b", DType::F32, None);
    p.add_node("bad_add", add(), &[Some(a), Some(c)], &[b])
        .unwrap();
    p.rewire(a, b).unwrap();
    fails(&g, p, "bad_add");

    // Ids that do not exist are refused when the patch is built.
    let mut p = Patch::new(&g);
    assert!(p.rewire(ValId(42), x).is_err());
    assert!(p.remove_node(NodeId(7)).is_err());
    assert!(p.add_node("n", relu(), &[Some(ValId(3))], &[x]).is_err());
    assert!(p.replace(&[], &[]).is_err());
    let own = p.add_node("own", relu(), &[Some(x)], &[a]).unwrap();
    assert!(p.replace(&[own], &[]).is_err());
    assert!(p.replace(&[relu_n], &[neg_n]).is_err());

    // A patch applied to another graph.
    let mut other = chain();
    other.add_value("extra", DType::F32, None);
    let err = Patch::new(&g).apply(&mut other).unwrap_err();
    assert!(err.to_string().contains("patch built against"), "{err}");
}
