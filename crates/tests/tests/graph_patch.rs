//! Graph rewrites (`edgeopt_ir::Patch`, issue 15 item 2) on a real model: PyTorch's
//! ResNet-20 as exported by TorchScript (opset 17), from ../shared/data/exporters.
//!
//! Three rewrites whose result is the same function, each checked with the runtime:
//! - splice an Identity after every Relu (insert on an edge, rewire the readers,
//!   graph outputs included): outputs bit-identical;
//! - bypass those Identities again: the graph is the imported one, value for value;
//! - fuse every Conv whose only reader is a Relu into a Conv with a fused ReLU
//!   (replace a two-node chain by one node that produces the Relu's output): fewer
//!   nodes, outputs bit-identical (the conv kernels clamp after the same sum).

use edgeopt_ir::op::Activation;
use edgeopt_ir::{Graph, NodeId, Op, Patch, Tensor, UnaryKind, ValId};
use edgeopt_testkit as tk;

const RESNET20: &str = "exporters/onnx/resnet20.ts17.onnx";

fn load(rel: &str) -> Option<Graph> {
    let Some(p) = tk::data_file(rel) else {
        eprintln!("skipped: {rel} not found");
        return None;
    };
    Some(edgeopt_cli::load_model(&p).unwrap())
}

/// Deterministic inputs in [-1, 1) for the graph's (batch-1) inputs.
fn inputs(g: &Graph) -> Vec<Tensor> {
    let shapes = edgeopt_ir::shape::bind_input_shapes(g, 1).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    shapes
        .into_iter()
        .map(|s| {
            let n: usize = s.iter().product();
            let v = (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    -1.0 + 2.0 * ((state >> 40) as f32 / (1u64 << 24) as f32)
                })
                .collect();
            Tensor::from_f32(s, v).unwrap()
        })
        .collect()
}

fn run(g: &Graph, x: &[Tensor]) -> Vec<Vec<u32>> {
    edgeopt_runtime::run(g, x)
        .unwrap()
        .iter()
        .map(|t| t.to_f32_vec().iter().map(|v| v.to_bits()).collect())
        .collect()
}

fn count(g: &Graph, pred: impl Fn(&Op) -> bool) -> usize {
    g.nodes.iter().filter(|n| pred(&n.op)).count()
}

fn is_relu(op: &Op) -> bool {
    matches!(op, Op::Unary(UnaryKind::Relu))
}

#[test]
fn resnet20_identity_splice_and_relu_fusion_keep_outputs() {
    let Some(g) = load(RESNET20) else { return };
    let x = inputs(&g);
    let reference = run(&g, &x);
    let relus = count(&g, is_relu);
    assert!(relus >= 10, "ResNet-20 has {relus} Relu nodes");

    // Splice an Identity after every Relu.
    let mut spliced = g.clone();
    let mut p = Patch::new(&spliced);
    let mut idents = Vec::new();
    for n in spliced.nodes.iter().filter(|n| is_relu(&n.op)) {
        let out = ValId(n.outputs[0]);
        let v = &spliced.values[out.0];
        let fresh = p.add_value(&format!("{}_id", v.name), v.dtype, None);
        let id = p
            .add_node(
                &format!("{}_identity", n.name),
                Op::Identity,
                &[Some(out)],
                &[fresh],
            )
            .unwrap();
        p.rewire(out, fresh).unwrap();
        idents.push(id);
    }
    let applied = p.apply(&mut spliced).unwrap();
    assert_eq!(spliced.nodes.len(), g.nodes.len() + relus);
    // Each Identity sits right after its Relu, and reads it.
    for id in &idents {
        let at = applied.node(*id).unwrap().0;
        let prev = &spliced.nodes[at - 1];
        assert!(
            is_relu(&prev.op),
            "{} follows {}",
            spliced.nodes[at].name,
            prev.name
        );
        assert_eq!(spliced.nodes[at].inputs, vec![Some(prev.outputs[0])]);
    }
    assert_eq!(
        run(&spliced, &x),
        reference,
        "spliced Identities changed the outputs"
    );

    // Bypass them: back to the imported graph, value for value.
    let mut restored = spliced.clone();
    let mut p = Patch::new(&restored);
    for id in &idents {
        let at = applied.node(*id).unwrap();
        p.bypass(&restored, &[at]).unwrap();
    }
    p.apply(&mut restored).unwrap();
    assert_eq!(restored, g);

    // Fuse Conv -> Relu (the conv's output read by the Relu only) into one Conv.
    let mut fused = g.clone();
    let readers = fused.consumers();
    let producers = fused.producers();
    let mut p = Patch::new(&fused);
    let mut n_fused = 0;
    for (ri, relu) in fused
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| is_relu(&n.op))
    {
        let Some(src) = relu.input(0) else { continue };
        let Some(ci) = producers[src] else { continue };
        let Op::Conv(attrs) = &fused.nodes[ci].op else {
            continue;
        };
        if readers[src].len() != 1 || fused.outputs.contains(&src) {
            continue;
        }
        if attrs.activation != Activation::None {
            continue;
        }
        let conv = &fused.nodes[ci];
        let mut attrs = attrs.clone();
        attrs.activation = Activation::Relu;
        let ins: Vec<Option<ValId>> = conv.inputs.iter().map(|i| i.map(ValId)).collect();
        let new = p
            .add_node(&conv.name, Op::Conv(attrs), &ins, &[ValId(relu.outputs[0])])
            .unwrap();
        p.replace(&[NodeId(ci), NodeId(ri)], &[new]).unwrap();
        n_fused += 1;
    }
    p.apply(&mut fused).unwrap();
    assert!(n_fused >= 10, "fused {n_fused} Conv -> Relu pairs");
    assert_eq!(fused.nodes.len(), g.nodes.len() - n_fused);
    assert_eq!(count(&fused, is_relu), relus - n_fused);
    assert_eq!(fused.values.len(), g.values.len() - n_fused);
    assert_eq!(
        run(&fused, &x),
        reference,
        "fused ReLUs changed the outputs"
    );
}
